import { describeConformance } from '../support/conformance';

describeConformance('scripted');
