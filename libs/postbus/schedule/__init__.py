"""Destination-aware scheduling shared by every replica (≈ Postfix's qmgr_queue.c,
qmgr_feedback.c): concurrency windows in Redis (:mod:`.windows`) and the gate
every delivery agent passes a job through (:mod:`.gate`)."""
