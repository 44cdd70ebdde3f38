import { describePortable } from '../support/portable';

describePortable('acp');
