import { describeConformance } from '../support/conformance';

describeConformance('openclaw');
