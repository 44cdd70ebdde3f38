import { describePortable } from '../support/portable';

describePortable('claude-code');
