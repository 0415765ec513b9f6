"""The CUDA kernel namespace: the CPU namespace's functions, same names and arguments but for the
workspaces (each device's kernels take the ones their op's `<op>_workspace_shapes` declares on that
device, by name, as their last arguments), as host-side launchers of numba.cuda kernels on device
arrays; and the buffer functions (memory.py) that allocate device arrays and copy to and from the
host. Each file holds its @cuda.jit kernels first, then, after a "# ---- host side ----" line, the
launchers.

Importing this package imports numba.cuda; the CPU path never does (kernels.namespace imports a
device's namespace only when asked for it). Under NUMBA_ENABLE_CUDASIM=1 it runs on Numba's CUDA
simulator.
"""

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
from .conv import conv2d_algorithms, conv2d_backward, conv2d_forward, conv2d_workspace_shapes
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
