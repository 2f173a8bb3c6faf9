"""What grading hands back: the students' feedback pages, grades.csv and the report, the speed table."""
