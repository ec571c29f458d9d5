// Replaced by the OS definition's entry point (work in progress on this branch).
import ImageDeploy
