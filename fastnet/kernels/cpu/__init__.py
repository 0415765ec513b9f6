"""The CPU kernel namespace: every kernel the layers call, as `k.<name>`, the workspaces each op's
kernels take (`<op>_workspace_shapes`, fastnet/kernels/workspace.py), and the buffer functions
(memory.py) the plan and model allocate and copy with.
(augment.py is not a device kernel: batches are assembled on the host whatever the device, by
fastnet.data.Augment.)"""

from .activation import (
    copy_forward,
    dropout_backward,
    dropout_forward,
    dropout_workspace_shapes,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    softmax_backward,
    softmax_forward,
    tanh_backward,
    tanh_forward,
)
from .conv import conv2d_backward, conv2d_forward, conv2d_workspace_shapes
from .conv_algorithms import conv2d_algorithms
from .conv_direct import conv2d_direct_backward, conv2d_direct_forward, conv2d_direct_workspace_shapes
from .conv_winograd import conv2d_winograd_backward, conv2d_winograd_forward, conv2d_winograd_workspace_shapes
from .dense import bias_backward, dense_backward_input, dense_backward_weight, dense_forward, dense_workspace_shapes
from .embedding import embedding_backward, embedding_forward
from .finite import count_nonfinite
from .loss import (
    count_correct,
    cross_entropy_backward,
    cross_entropy_forward,
    cross_entropy_workspace_shapes,
    mse_backward,
    mse_forward,
)
from .memory import copy_in, copy_out, staging, to_host, zeros
from .merge import accumulate, add_forward, copy_channels, fill
from .norm import (
    batchnorm_backward,
    batchnorm_fold,
    batchnorm_forward_eval,
    batchnorm_forward_train,
    batchnorm_sync_backward,
    batchnorm_sync_backward_sums,
    batchnorm_sync_forward,
    batchnorm_sync_squares,
    batchnorm_sync_sums,
    batchnorm_workspace_shapes,
)
from .normalize import normalize_backward, normalize_forward
from .optim import adam_update, clip_grad_norm, sgd_update
from .pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    global_avgpool2d_backward,
    global_avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    maxpool2d_workspace_shapes,
)
from .recurrent import (
    gru_backward,
    gru_forward,
    gru_workspace_shapes,
    lstm_backward,
    lstm_forward,
    lstm_workspace_shapes,
    rnn_backward,
    rnn_forward,
    rnn_workspace_shapes,
)
