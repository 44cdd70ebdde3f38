import { describeRemoteHostLoss } from '../support/portable-remote';

describeRemoteHostLoss('managed-agents');
