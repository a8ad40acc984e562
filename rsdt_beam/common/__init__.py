"""The ground floor: vocabulary every layer shares (modalities, times, observations, file names).

Pure: imports neither Beam nor TensorFlow.
"""
