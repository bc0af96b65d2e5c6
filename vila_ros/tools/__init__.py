"""Programs around the perception node: its command line, rosbag2 replay, service client, the node-process harness,
replay scoring and reports, the soak run and the demo. Nothing in vila_ros.ros imports this package."""
