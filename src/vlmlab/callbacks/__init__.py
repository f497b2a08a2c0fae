"""Lightning callbacks: Hugging Face export, TensorBoard completions and images, batch statistics."""
