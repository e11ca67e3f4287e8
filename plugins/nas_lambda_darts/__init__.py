"""Lambda-DARTS (Movahedi et al., ICLR 2023): a weight-side regulariser aligning the gradients the cells send to their mixing weights."""
