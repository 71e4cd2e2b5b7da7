"""Internal helpers: Keras flavours, the one home of private Keras/TF/TFMOT access, tf_keras
registration, argument validation. Nothing here imports the rest of the package."""
