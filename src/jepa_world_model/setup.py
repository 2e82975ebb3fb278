from setuptools import find_packages, setup

package_name = 'jepa_world_model'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={package_name: ['checkpoints/*.pt', 'checkpoints/*.json', 'checkpoints/*.npz']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='JEPA robotics maintainers',
    maintainer_email='maintainers@jepa-robotics.org',
    description='JEPA world model: encoder, latent predictor, bag datasets, training and evaluation.',
    license='Apache-2.0',
    entry_points={'console_scripts': [
        'world_model_node = jepa_world_model.world_model_node:main',
    ]},
)
