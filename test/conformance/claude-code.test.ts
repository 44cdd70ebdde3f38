import { describeConformance } from '../support/conformance';

describeConformance('claude-code');
