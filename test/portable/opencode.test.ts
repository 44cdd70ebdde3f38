import { describePortable } from '../support/portable';

describePortable('opencode');
