"""Networks: the paper's MLP and small VGG written for populations (:mod:`.paper`)."""
