import { describePortable } from '../support/portable';

describePortable('hermes');
