"""Model families, one package each: lavik (Lavik 2024), gated (Kemmerling), loopy (Caswell et al.
2016), inn (Hershey 2023) and thinking (DeepThinking-style nets that think longer, issue 18)."""
