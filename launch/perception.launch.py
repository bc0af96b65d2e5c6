"""ros2 launch vila_ros perception.launch.py [params_file:=...] [model_dir:=...] [namespace:=...] [use_sim_time:=true]
    [dds_profile:=FILE]"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("vila_ros")
    default_params = os.path.join(share, "config", "perception.yaml")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="Node parameters (YAML)."),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node."),
        DeclareLaunchArgument("model_dir", default_value="",
                              description="VILA1.5 checkpoint directory; empty = the embedded default."),
        DeclareLaunchArgument("precision", default_value="fp32", description="fp32, bf16 or int4."),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu or cuda."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Follow /clock (e.g. `vila-ros replay BAG --clock`)."),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level."),
        DeclareLaunchArgument("dds_profile", default_value=os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", ""),
                              description="Fast DDS XML profile of the node's process, e.g. "
                                          + os.path.join(share, "config", "fastdds_local_large_frames.xml")
                                          + " (give the camera drivers the same one: raw frames over 512 KiB "
                                          "need its shared-memory segment)."),
    ]
    node = Node(
        package="vila_ros",
        executable="perception_node",
        name="vila_perception",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model_dir": LaunchConfiguration("model_dir"),
                "precision": LaunchConfiguration("precision"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    # Keep DDS discovery on this host unless the environment already chose otherwise.
    discovery = SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                       os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST"))
    dds_profile = SetEnvironmentVariable(  # only when given: an empty value is not "no profile" to Fast DDS
        "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile"),
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("dds_profile"), "' != ''"])))
    return LaunchDescription([discovery, *arguments, dds_profile, node])
