"""`jepa <command> ...`: one entry point; each command lives in the package that owns it."""
import importlib
import sys

# command -> (module, one-line help). Each module has main(argv: list[str]) -> int.
COMMANDS = {
    'launch': ('jepa_bringup.launcher', 'start a graph (sim, arm) from config/graph.yaml without ros2 launch'),
    'record': ('jepa_rosbag.record', 'record topics into a rosbag2 bag (mcap or sqlite3)'),
    'replay': ('jepa_rosbag.replay', 'publish a bag with its recorded timing and /clock'),
    'collect': ('jepa_bringup.collect', 'drive the simulated arm (or any arm: --arm PRESET) with motor babbling and '
                'record play data'),
    'train': ('jepa_world_model.train', 'train the JEPA world model from bags'),
    'export-lerobot': ('jepa_world_model.lerobot_export', 'write bags as a LeRobotDataset (v3.0), which `jepa train '
                       '--bag` also trains from'),
    'eval-model': ('jepa_world_model.eval_model', 'latent prediction error vs horizon against baselines'),
    'surprise': ('jepa_world_model.surprise', 'plot predicted vs actual latent error over an episode'),
    'train-high-level': ('jepa_world_model.train_high_level', 'train the higher level\'s macro-action predictor '
                         'from play bags, in a world model\'s latent space'),
    'train-critic': ('jepa_configurator.train_critic', 'fit the critic from recorded episodes'),
    'fit-readout': ('jepa_world_model.fit_readout', 'fit the push skill\'s cube read-out from play bags, without labels'),
    'adjust-world-model': ('jepa_configurator.adjust_world_model', 'fine-tune the predictor where its predictions failed'),
    'adjust-encoder': ('jepa_configurator.adjust_encoder', 're-calibrate perception (the encoder) from recent play '
                       'after the camera or the scene changed'),
    'eval': ('jepa_bringup.evaluate', 'run seeded reach/push episodes through the full graph'),
    'calibrate': ('jepa_bringup.calibrate', 'record camera pose and goal images from a real scene'),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ['usage: jepa <command> [args...]', '', 'commands:']
    lines += [f'  {name:<{width}}  {help_}' for name, (_, help_) in COMMANDS.items()]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help', 'help'):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f'jepa: unknown command {command!r}\n\n{usage()}', file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == '__main__':
    sys.exit(main())
