"""Lightning callbacks: Hugging Face export, TensorBoard completions and images, batch statistics, the
constant-answer baseline of the validation metrics."""
