"""Building networks from layer specs: `ln.Network`, the spec types of `ln.layers`, convolution
helpers and stacks of same-shaped networks. Imports only `loopnets.core`."""
