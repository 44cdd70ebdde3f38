import { describeRemoteHostLoss } from '../support/portable-remote';

describeRemoteHostLoss('cursor');
