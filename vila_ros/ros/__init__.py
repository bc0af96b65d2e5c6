"""ROS 2 side of vila_ros: what runs inside the perception node process (node, worker, message conversion,
services, outputs). Programs around the node live in vila_ros.tools."""
