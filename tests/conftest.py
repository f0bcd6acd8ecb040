# Theano reads its configuration once, at its first import: gcm_lasagne
# must set it up before any test module imports theano itself.
import gcm_lasagne  # noqa: F401
