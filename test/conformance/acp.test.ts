import { describeConformance } from '../support/conformance';

describeConformance('acp');
