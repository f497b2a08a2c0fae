"""Tasks: what a model is asked and how its answer is read, one module per task.

Each module owns the prompt, the answer format (writer and parser) and the target schema (a
dataclass whose ``as_dict()`` is what a :class:`vlmlab.data.sample.Sample` carries as ``target``):

* :mod:`~vlmlab.tasks.report`: 3D report generation (free text);
* :mod:`~vlmlab.tasks.brats_detection`: a 3D tumour box, peak slice and volume ratio as JSON, in the
  coordinates of the frames the model sees (:mod:`~vlmlab.tasks.coords` maps them to voxels);
* :mod:`~vlmlab.tasks.grounding`: a time span of a video;
* :mod:`~vlmlab.tasks.mcqa`: the letter of a multiple-choice option;
* :mod:`~vlmlab.tasks.robot_reward`: the success class of a robot frame.

Data sources, rewards, metrics and pictures import from here, so a reward and the metric beside it
read an answer the same way. Nothing here reads a file or touches a model.
"""
