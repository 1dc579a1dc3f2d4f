"""Model families, one package each: lavik (Lavik 2024), gated (Kemmerling), loopy (Caswell et al.
2016) and inn (Hershey 2023)."""
