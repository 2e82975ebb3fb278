from setuptools import find_packages, setup

package_name = 'jepa_actor'

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
    description='Actor: Mode-2 MPC through the world model, the Mode-1 policy distilled from it, the scripted push reference.',
    license='Apache-2.0',
    entry_points={'console_scripts': [
        'actor_node = jepa_actor.actor_node:main',
    ]},
)
