"""Object detection: KITTI converted to the YOLO layout and trained with ultralytics' own trainer."""
