from glob import glob

from setuptools import find_packages, setup

package_name = 'jepa_bringup'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
        ('share/' + package_name + '/config/arms', glob('config/arms/*.yaml')),
        ('share/' + package_name + '/launch', glob('launch/*.py')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='JEPA robotics maintainers',
    maintainer_email='maintainers@jepa-robotics.org',
    description='Bring-up of the JEPA agent: graph description, launch files, params, pip launcher and the jepa command.',
    license='Apache-2.0',
    entry_points={'console_scripts': [
        'jepa = jepa_bringup.cli:main',
    ]},
)
