"""Pure-Python backends of Movie Director. Nothing below this package imports bpy."""
