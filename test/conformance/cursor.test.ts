import { describeConformance } from '../support/conformance';

describeConformance('cursor');
