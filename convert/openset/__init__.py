"""Open-set training: blocks of none of the labels (negatives), validation streams built from held-out clips
over background, and the detection settings and out-of-distribution rule chosen on them."""
