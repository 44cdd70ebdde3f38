import { describePortable } from '../support/portable';

describePortable('openclaw');
