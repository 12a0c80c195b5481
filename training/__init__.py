"""Lightning pieces shared by the teacher and the student loops (resume checkpoints)."""
