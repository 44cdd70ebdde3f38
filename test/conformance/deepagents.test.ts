import { describeConformance } from '../support/conformance';

describeConformance('deepagents');
