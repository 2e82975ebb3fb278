from setuptools import find_packages, setup

package_name = 'jepa_cost'

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
    description='Cost module: the hard-wired intrinsic cost and the trainable critic; the cost node scores each latent.',
    license='Apache-2.0',
    entry_points={'console_scripts': [
        'cost_node = jepa_cost.cost_node:main',
    ]},
)
