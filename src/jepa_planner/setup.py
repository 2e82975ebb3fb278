from setuptools import find_packages, setup

package_name = 'jepa_planner'

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
    description='The agent: intrinsic cost + critic, short-term memory, Mode-2 MPC / Mode-1 policy actor, configurator.',
    license='Apache-2.0',
    entry_points={'console_scripts': [
        'cost_node = jepa_planner.cost_node:main',
        'short_term_memory_node = jepa_planner.short_term_memory_node:main',
        'actor_node = jepa_planner.actor_node:main',
        'configurator_node = jepa_planner.configurator_node:main',
    ]},
)
