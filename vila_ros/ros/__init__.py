"""ROS 2 side of vila_ros: what runs inside the perception node process (node, worker, message conversion,
services, outputs). The programs around the node are in the tools package."""
