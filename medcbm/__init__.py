"""medcbm."""
