import { describeConformance } from '../support/conformance';

describeConformance('opencode');
