from setuptools import find_packages, setup

package_name = 'jepa_configurator'

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
    description='Configurator: task, goal, cost weights and mode; sustained surprise -> world-model and critic adjustment.',
    license='Apache-2.0',
    entry_points={'console_scripts': [
        'configurator_node = jepa_configurator.configurator_node:main',
    ]},
)
