"""ROS 2 side of vila_ros: nodes, message conversion, services, replay. The only package that imports rclpy."""
