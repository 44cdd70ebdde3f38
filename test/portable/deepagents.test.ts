import { describePortable } from '../support/portable';

describePortable('deepagents');
