from setuptools import find_packages, setup

package_name = 'jepa_sim'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='JEPA robotics maintainers',
    maintainer_email='maintainers@jepa-robotics.org',
    description='PyBullet arms (the Panda simulator, a driver stand-in for any URDF) and a mock arm behind a '
                'ros2_control-like interface.',
    license='Apache-2.0',
    entry_points={'console_scripts': [
        'sim_node = jepa_sim.sim_node:main',
        'fake_arm_node = jepa_sim.fake_arm_node:main',
        'sim_driver_node = jepa_sim.sim_driver_node:main',
        'arm_check = jepa_sim.arm_check:main',
    ]},
)
