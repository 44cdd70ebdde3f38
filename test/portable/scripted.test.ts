import { describeRemoteHostLoss } from '../support/portable-remote';

describeRemoteHostLoss('scripted');
