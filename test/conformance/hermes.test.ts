import { describeConformance } from '../support/conformance';

describeConformance('hermes');
