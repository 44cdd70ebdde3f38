import { describeConformance } from '../support/conformance';

describeConformance('managed-agents');
