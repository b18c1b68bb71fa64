"""BIDS datasets in and out (deepwml_bids): the T2-FLAIR scans of a BIDS dataset predicted into a BIDS-derivatives
dataset (participant level), and one table of every scan's lesion figures (group level)."""

#: what deepwml_bids --longitudinal compares each later session with: the one before it, the first, or both (here, not
#: in deepwml.bids.longitudinal, so that the command line knows it without importing pandas)
LONGITUDINAL_AGAINST = ("previous", "first", "both")
