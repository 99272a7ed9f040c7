"""Object detection: KITTI converted to the YOLO layout (``kitti``), the YOLO model config and ultralytics set up
offline inside a run directory (``yolo``), training with ultralytics' own trainer (``train``, ``task=detect``) and
detection on image files (``predict``)."""
