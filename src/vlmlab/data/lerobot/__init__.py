"""Robot success reward classification from a local LeRobot dataset (the robot reward recipe).

A LeRobot v3.0 dataset folder is read through lerobot's own ``LeRobotDataset(repo_id, root=...)``,
never from the hub. Each frame becomes one sample: the configured cameras (right wrist, left wrist,
high) as images and :data:`vlmlab.tasks.robot_reward.TASK_PROMPT`; its class is the argmax of the
frame's ``reward_bins`` vector.

:mod:`.local` checks and opens a folder, :mod:`.frames` reads its frames and decodes them
(:mod:`.video` for video cameras), :mod:`.splits` splits episodes, :mod:`.datamodule` serves them.
"""

from vlmlab.data.lerobot.datamodule import LeRobotRewardDataModule
from vlmlab.data.lerobot.frames import LeRobotFrames, frame_to_pil, validate_file
from vlmlab.data.lerobot.local import DEFAULT_CAMERAS, DEFAULT_REPO_ID, check_metadata, read_info
from vlmlab.data.lerobot.splits import split_episodes
from vlmlab.data.lerobot.video import VideoDecodeError, decode_video_frame

__all__ = [
    "DEFAULT_CAMERAS",
    "DEFAULT_REPO_ID",
    "LeRobotFrames",
    "LeRobotRewardDataModule",
    "VideoDecodeError",
    "check_metadata",
    "decode_video_frame",
    "frame_to_pil",
    "read_info",
    "split_episodes",
    "validate_file",
]
