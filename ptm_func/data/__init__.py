"""Images in, normalised device tensors out: where the data comes from and what it is.

Owns the `Dataset`/`Split` containers and their fingerprint (`dataset`), ImageFolder trees and
image decoding (`folders`), and the sources (`sources`: CIFAR-10, the bundled CIFAR-2 in
`bundled/`, a folder). Knows nothing of models or training.
"""
