from setuptools import find_packages, setup

package_name = 'jepa_short_term_memory'

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
    description="Short-term memory: the agent's recent transitions, written to bags for the configurator's adjustments.",
    license='Apache-2.0',
    entry_points={'console_scripts': [
        'short_term_memory_node = jepa_short_term_memory.short_term_memory_node:main',
    ]},
)
