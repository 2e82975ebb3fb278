"""Record topics into rosbag2 bags, replay them into the graph with /clock, and read them for learning."""
