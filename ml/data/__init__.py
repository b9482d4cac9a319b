"""Face-forgery data engine: procedural and real-photo faces, manipulations with exact masks, SJEDD
region targets, the dataset writer (manifest + protocols) and the torch dataset/loader.

Modules: ``faces`` (procedural faces), ``landmarks`` (dlib 68 points, crops, video frames),
``regions`` (landmark region masks, mask -> region targets), ``manipulations`` (forgery families),
``real_photos`` (photos shipped in packages), ``generate`` (dataset writer), ``manifest``,
``protocols``, ``dataset``, ``ingest`` (a folder of real photos/videos -> dataset), ``preview``
(contact sheet). CLI: ``python -m ml.data generate --out DIR --count N --size S --seed K``.
Nothing here imports Django or Celery; heavy modules are imported where used.
"""
